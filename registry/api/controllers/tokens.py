"""API tokens (admin): create (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from registry.api.deps import parse_time, reader, writer
from registry.api.errors import problem_responses
from registry.api.schemas import CreatedTokenResponse, CreateTokenRequest, TokenList, TokenResponse
from registry.services import tokens
from registry.services.tokens import CreateToken

TokenId = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="token id")]


class TokenController(Controller):
    path = "/tokens"
    tags = ["tokens"]

    @post("/", operation_id="createToken", responses=problem_responses(400, 403, 409))
    async def create_token(self, request: Request[Any, Any, Any],
                           data: JSONBody[CreateTokenRequest]) -> CreatedTokenResponse:
        """Create a token for a principal (defaults to the token's name) with one role and,
        optionally, model-name globs it is limited to and an expiry. The secret is in this
        response only; the registry keeps its hash."""
        cmd = CreateToken(data.name, data.role, data.principal, data.models, parse_time(data.expires_at))
        t, secret = await tokens.create_token(cmd, writer(request))
        return CreatedTokenResponse(t.id, t.name, t.principal, t.role, t.models, t.created_at,
                                    t.expires_at, t.last_used_at, t.revoked_at, secret)

    @get("/", operation_id="listTokens", responses=problem_responses(400, 403))
    async def list_tokens(self, request: Request[Any, Any, Any],
                          limit: Annotated[int | None, QueryParameter(ge=1, le=1000)] = None,
                          cursor: Annotated[str | None, QueryParameter(max_length=2048)] = None) -> TokenList:
        """Tokens by id, without their secrets."""
        result = await tokens.list_tokens(cursor, limit, reader(request))
        return TokenList([TokenResponse.of(t) for t in result.items], result.next_cursor)

    @delete("/{token_id:int}", operation_id="revokeToken", responses=problem_responses(400, 403, 404))
    async def revoke_token(self, request: Request[Any, Any, Any], token_id: TokenId) -> None:
        """Revoke a token; it is refused within a second on every server process."""
        await tokens.revoke_token(token_id, writer(request))
