-- An llm agent's credentials for its MCP tool servers (one JSON list of header objects),
-- sealed under the server key like the other secrets.
ALTER TABLE agents ADD COLUMN tool_credentials TEXT;
