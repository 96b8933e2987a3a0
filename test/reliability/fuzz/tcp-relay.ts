/**
 * A byte relay run inside the daemon's network namespace (`ip netns exec`): it listens on a
 * unix socket and connects each client to the daemon's TCP listener on 127.0.0.1:<port>, so
 * the test in the host namespace reaches the real TCP listener without any address outside
 * the namespace. Bytes, half-closes and resets pass through unchanged.
 * Usage: node tcp-relay.js <unix socket path> <tcp port>; prints "ready" once listening.
 */
import net from 'node:net';

const [socketPath, port] = process.argv.slice(2);
if (!socketPath || !port) throw new Error('usage: tcp-relay.js <unix socket> <tcp port>');

const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const upstream = net.connect({ host: '127.0.0.1', port: Number(port), allowHalfOpen: true });
  client.pipe(upstream);
  upstream.pipe(client);
  // A reset on one side is a reset on the other (what the peer would have seen directly).
  // A reset by the test is a reset to the daemon (what it would have seen directly); a unix
  // socket cannot send a reset, so one from the daemon just closes the client's connection.
  client.on('error', () => upstream.resetAndDestroy());
  upstream.on('error', () => client.destroy());
});
server.listen(socketPath, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
