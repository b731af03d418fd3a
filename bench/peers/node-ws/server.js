// Skein benchmark peer: a minimal, idiomatic Node broadcast server on `ws`.
// Usage: node server.js <port>   (port 0 = any free port)
// Prints "listening <port>" once ready; every text message a client sends is
// relayed as-is to every OTHER open client (never back to the sender).
const { WebSocketServer, WebSocket } = require('ws');

const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2] || 0), perMessageDeflate: false });
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) client.send(data, { binary: false });
    }
  });
});
