# An MCP server whose tools a Skein llm agent can call: a calculator and a shared notebook.
#   pip install mcp==2.3.0 uvicorn
#   python3 examples/mcp_tools.py 8765 [--token SECRET]
# Then give an llm agent the tools (SKEIN_ALLOW_PRIVATE_URLS=true lets Skein reach
# 127.0.0.1 while you develop):
#   skein agents create --name Analyst --kind llm \
#     --tool '{"url": "http://127.0.0.1:8765/mcp", "name": "notebook", "bearer": "SECRET"}'
import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("notebook")
notes: dict[str, str] = {}


@server.tool()
def add(a: float, b: float) -> float:
    """Adds two numbers."""
    return a + b


@server.tool()
def remember(key: str, text: str) -> str:
    """Writes a note under a key, replacing what was there."""
    notes[key] = text
    return f"noted under {key}"


@server.tool()
def recall(key: str) -> str:
    """Reads the note under a key."""
    if key not in notes:
        raise ValueError(f"nothing is noted under {key}; keys: {', '.join(notes) or 'none'}")
    return notes[key]


def bearer_only(app, token):
    """Refuses any request without `Authorization: Bearer <token>`."""
    async def guarded(scope, receive, send):
        headers = dict(scope.get("headers", []))
        if scope["type"] == "http" and headers.get(b"authorization") != f"Bearer {token}".encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)
    return guarded


parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--token")
args = parser.parse_args()
app = server.streamable_http_app(streamable_http_path="/mcp")
if args.token:
    app = bearer_only(app, args.token)
uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
