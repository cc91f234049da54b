"""Web service: FastAPI app factory, schemas, dashboard static files."""
