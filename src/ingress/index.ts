export { IngressManager, DEFAULT_INGRESS_PORT, type IngressManagerOptions } from './manager.js';
export { IngressProxy, type Backend, type ResolveBackend, type ProxyRoute } from './proxy.js';
export { backendFor } from './backend.js';
export { INSTANCE_PLACEHOLDER, matchHost, normalizeHost, parseHostname } from './hostname.js';
