/**
 * What this host can do, decided by trying: resources, host tools, and
 * whether KVM and TCG really run guest code. See README.md.
 */
export { hostResources, hostTscKhz, type HostResources } from './resources.js';
export {
  probeHost,
  type HostReport,
  type HypervisorInfo,
  type HypervisorName,
  type ProbeHostOptions,
} from './probe.js';
export type { Check, CheckStatus, ConfinementStatus, EgressGuardStatus } from './checks.js';
export { confinementCheck, egressGuardCheck } from './checks.js';
export { KVM_DEADLINE_MS, KVM_MAX_SLOWDOWN, type KvmProbe } from './kvm-probe.js';
