/** The host's platform in OCI / Go naming (`linux/amd64`, `linux/arm64`): what Vessel pulls and runs. */
export function hostPlatform(): { os: string; arch: string; platform: string } {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  return { os: 'linux', arch, platform: `linux/${arch}` };
}
