import type { Command } from 'commander';
import { connect, type GlobalOptions } from '../connect.js';
import { EXIT } from '../exit-codes.js';
import { humanBytes, printJson } from '../output.js';

const MARK = { ok: '✔', warn: '!', fail: '✘' } as const;

export function registerDoctorCommand(
  program: Command,
  globals: () => GlobalOptions,
  setExit: (code: number) => void,
): void {
  program
    .command('doctor')
    .description('what this host can and cannot do, and how to fix what is missing')
    .option('--refresh', 'probe KVM again instead of using the daemon’s cached result')
    .action(async (o: { refresh?: boolean }) => {
      const g = globals();
      const r = await (await connect(g)).resources({ refresh: o.refresh === true });
      const failed = r.checks.some((c) => c.status === 'fail');
      if (g.json) {
        printJson(r);
      } else {
        const h = r.host;
        process.stdout.write(
          `host: ${h.cpus} CPUs, ${humanBytes(h.memory_bytes)} memory, ${humanBytes(h.disk.free_bytes)} free in ${h.disk.path}, ${h.arch}, Linux ${h.kernel}\n`,
        );
        const kvm = r.accelerators.kvm;
        process.stdout.write(
          `accelerator: ${kvm.usable ? 'KVM' : r.accelerators.tcg ? 'TCG (software emulation; slower)' : 'none'}\n\n`,
        );
        for (const c of r.checks) {
          process.stdout.write(`${MARK[c.status]} ${c.title}: ${c.detail}\n`);
          if (c.fix && c.status !== 'ok') process.stdout.write(`    fix: ${c.fix}\n`);
        }
      }
      setExit(failed ? EXIT.failure : EXIT.ok);
    });
}
