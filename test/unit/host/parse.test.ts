import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseErofsCompressors,
  parseMachineHelp,
  parseMemAvailable,
  parseQemuVersion,
  parseToolVersion,
} from '../../../src/host/parse.js';

void describe('parseQemuVersion', () => {
  void it('reads the Debian 12 version line', () => {
    const out =
      'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n';
    assert.deepEqual(parseQemuVersion(out), { text: '7.2.22', major: 7, minor: 2 });
  });

  void it('reads a two-part version', () => {
    assert.deepEqual(parseQemuVersion('QEMU emulator version 8.2\n'), {
      text: '8.2',
      major: 8,
      minor: 2,
    });
  });

  void it('returns null for output that is not QEMU', () => {
    assert.equal(parseQemuVersion('qemu-system-x86_64: command not found'), null);
    assert.equal(parseQemuVersion(''), null);
  });
});

void describe('parseToolVersion', () => {
  void it('reads firecracker, cloud-hypervisor and mke2fs versions', () => {
    assert.equal(parseToolVersion('Firecracker v1.7.0\n\n')?.text, '1.7.0');
    assert.equal(parseToolVersion('cloud-hypervisor v38.0\n')?.text, '38.0');
    assert.equal(
      parseToolVersion('mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0')?.text,
      '1.47.0',
    );
  });

  void it('returns null without a version', () => {
    assert.equal(parseToolVersion('usage: firecracker [options]'), null);
  });
});

void describe('parseMachineHelp', () => {
  const help = [
    'Supported machines are:',
    'microvm              microvm (i386)',
    'pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)',
    'pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)',
    'q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)',
    'none                 empty machine',
    '',
  ].join('\n');

  void it('lists machine names and finds microvm', () => {
    const names = parseMachineHelp(help);
    assert.deepEqual(names, ['microvm', 'pc', 'pc-i440fx-7.2', 'q35', 'none']);
    assert.ok(names.includes('microvm'));
  });

  void it('does not mistake a description for a name', () => {
    const names = parseMachineHelp(
      'Supported machines are:\npc    Standard PC with microvm-like options\n',
    );
    assert.deepEqual(names, ['pc']);
  });
});

void describe('parseErofsCompressors', () => {
  void it('reads the erofs-utils 1.5 help line', () => {
    const help = [
      'usage: [options] FILE DIRECTORY',
      '',
      ' --quiet               quiet execution (do not write anything to standard output.)',
      '',
      'Available compressors are: lz4hc, lz4',
      '',
    ].join('\n');
    assert.deepEqual(parseErofsCompressors(help), ['lz4hc', 'lz4']);
  });

  void it('reads the newer --version line', () => {
    const out =
      'mkfs.erofs (erofs-utils) 1.8.1\navailable compressors: lz4, lz4hc, lzma, deflate, zstd\n';
    assert.deepEqual(parseErofsCompressors(out), ['lz4', 'lz4hc', 'lzma', 'deflate', 'zstd']);
  });

  void it('reads a one-per-line list with level ranges', () => {
    const out =
      'Available compressors are:\n  lz4\n  lz4hc, [<level>] (default: 9, range: 0..12)\n  lzma\n\nmore text';
    assert.deepEqual(parseErofsCompressors(out), ['lz4', 'lz4hc', 'lzma']);
  });

  void it('finds no lz4 when only lzma is built in', () => {
    const list = parseErofsCompressors('Available compressors are: lzma');
    assert.deepEqual(list, ['lzma']);
    assert.equal(list.includes('lz4'), false);
  });

  void it('returns [] when there is no list', () => {
    assert.deepEqual(parseErofsCompressors('usage: [options] FILE DIRECTORY\n'), []);
  });
});

void describe('parseMemAvailable', () => {
  void it('reads MemAvailable in bytes', () => {
    const meminfo =
      'MemTotal:       24684084 kB\nMemFree:        23000000 kB\nMemAvailable:   24051720 kB\n';
    assert.equal(parseMemAvailable(meminfo), 24051720 * 1024);
  });

  void it('returns null on old kernels without the field', () => {
    assert.equal(parseMemAvailable('MemTotal: 1 kB\nMemFree: 1 kB\n'), null);
  });
});
