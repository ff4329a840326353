"""Controllers: parse, call one service, shape the answer. No SQL, no transactions."""
