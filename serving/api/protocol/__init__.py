"""The request bodies of every route as pydantic models that build engine requests, and the response shapes."""
