export { DnsServer, normalizeSuffix, type DnsEndpoint, type DnsServerOptions } from './server.js';
export { decide, dnsAddressOf, normalizeName, type DnsLookup, type DnsDecision } from './answer.js';
export { firstNameserver, parseEndpoint, resolveUpstream } from './upstream.js';
export * as dnsMessage from './message.js';
