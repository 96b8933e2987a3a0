export {
  BridgeNetwork,
  tapNameFor,
  tunProblem,
  TAP_PREFIX,
  POOL_PREFIX,
  type AttachRequest,
  type BridgeNetworkOptions,
} from './bridge-network.js';
export { detectBackend, type FirewallBackend } from './firewall.js';
export { hostRunner, type Runner } from './links.js';
export { openProxy, type PortProxy, type ProxySpec } from './port-proxy.js';
export { isGuestAddress, nextFreeAddress, parseSubnet, type Subnet } from './subnet.js';
export type { TapPoolStats } from './tap-pool.js';
export { BridgeProvider, netAdminProblem, type BridgeProviderOptions } from './bridge-provider.js';
export { applyEgressGuard, renderGuard, BLOCKED_V4, BLOCKED_V6 } from './egress-guard.js';
