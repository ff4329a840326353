"""The HTTP edge: the only package that imports Litestar."""
