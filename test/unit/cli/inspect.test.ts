import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { InstanceStats } from '../../../src/client/index.js';
import { cpuPercent, statsTable } from '../../../src/cli/commands/inspect.js';

function stats(over: Partial<InstanceStats> = {}): InstanceStats {
  return {
    instance_id: 'i1',
    instance_name: 'web',
    cpu_seconds: 10,
    memory_rss_bytes: 100_000_000,
    memory_vms_bytes: 900_000_000,
    network_rx_bytes: null,
    network_tx_bytes: null,
    allocated_vcpus: 1,
    allocated_memory_bytes: 400_000_000,
    memory_utilization_ratio: 0.25,
    disk_read_bytes: 5_000_000,
    disk_write_bytes: 1_000,
    state: 'Running',
    pid: 42,
    collected_at: '2030-01-01T00:00:00.000Z',
    unavailable: { network_rx_bytes: 'user-mode networking' },
    ...over,
  };
}

describe('vessel stats', () => {
  test('CPU % is CPU seconds over wall seconds between two samples of one process', () => {
    const a = stats();
    const b = stats({ cpu_seconds: 10.5, collected_at: '2030-01-01T00:00:02.000Z' });
    assert.equal(cpuPercent(a, b), 25);
    assert.equal(cpuPercent(undefined, b), null);
    assert.equal(cpuPercent(a, { ...b, pid: 43 }), null, 'a restarted VMM starts over');
    assert.equal(cpuPercent(a, { ...b, cpu_seconds: null }), null);
  });

  test('the table shows unknown numbers as "-"', () => {
    const out = statsTable([{ ...stats(), cpu_percent: 12.345 }]);
    const [head, row] = out.split('\n');
    assert.match(
      head!,
      /^NAME\s+STATE\s+CPU %\s+MEM \(RSS\)\s+MEM %\s+NET RX \/ TX\s+DISK R \/ W$/,
    );
    assert.match(
      row!,
      /^web\s+Running\s+12\.3\s+100 MB \/ 400 MB\s+25\.0\s+- \/ -\s+5\.0 MB \/ 1\.0 kB$/,
    );
  });
});
