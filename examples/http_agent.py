# A Skein `http` agent using only Python's standard library: it checks that each turn
# really comes from Skein (Standard Webhooks signature), then answers it.
#   SKEIN_AGENT_SECRET=whsec_… python3 examples/http_agent.py 8400
import base64, hashlib, hmac, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

KEY = base64.b64decode(os.environ["SKEIN_AGENT_SECRET"].removeprefix("whsec_"))

class Turn(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        sent, at = self.headers["webhook-id"], self.headers["webhook-timestamp"]
        mac = hmac.new(KEY, f"{sent}.{at}.".encode() + body, hashlib.sha256).digest()
        if "v1," + base64.b64encode(mac).decode() not in self.headers["webhook-signature"].split() \
                or abs(time.time() - int(at)) > 300:
            return self.send_error(401, "bad signature")
        turn = json.loads(body)
        heard = turn["transcript"][-1]["content"] if turn["transcript"] else turn["objective"]
        reply = {"content": f"{turn['agent']['name']} here. You said: {heard}"}
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(reply).encode())

HTTPServer(("127.0.0.1", int(sys.argv[1])), Turn).serve_forever()
