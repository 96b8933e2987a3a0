/**
 * Volumes: ext4 disk files under `<data>/volumes/` with a record in SQLite,
 * created empty or from a tar/tar.gz/tar.zst archive, and attached to
 * instances. The attachment check and insert are synchronous so the
 * instance subsystem can run them inside its reservation (two racing
 * attaches: exactly one wins). See README.md.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { VesselError, errnoCode, isVesselError, toVesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import { KeyedMutex } from '../core/sync.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { run } from '../core/process.js';
import { parseSize } from '../core/size.js';
import { matchTags, type Tags } from '../core/tags.js';
import type { Volume } from '../core/wire-volumes.js';
import { applyLayer } from '../images/unpack/index.js';
import type { Db } from '../store/index.js';
import { peekHead } from './peek.js';
import { VolumesRepo, type AttachmentRow, type VolumeRow } from './repo.js';
import {
  checkAttachments,
  checkMountPath,
  checkVolumeName,
  detectArchive,
  volumeBytes,
  writesVolume,
} from './rules.js';

export interface VolumeManagerOptions {
  readonly db: Db;
  readonly paths: Paths;
  readonly logger: Logger;
}

/** An attachment as asked for (create body, attach body). */
export interface VolumeMountRequest {
  /** Volume id or name. */
  readonly volume_id: string;
  readonly mount_path: string;
  readonly readonly?: boolean;
  readonly overlay?: boolean;
  /** Human-readable ("1GB"); default: the volume's size. */
  readonly overlay_size?: string;
}

/** A mount resolved to a volume id, checked but not yet recorded. */
export interface ResolvedMount {
  readonly volume_id: string;
  readonly mount_path: string;
  readonly readonly: boolean;
  readonly overlay: boolean;
  readonly overlay_size: number | null;
}

/** One volume disk as the guest sees it (guest-agent/PROTOCOL.md §2 `volumes`). */
export interface GuestVolume {
  readonly device_serial: string;
  readonly mount_path: string;
  readonly readonly: boolean;
  /** Overlay attachments: the serial of the instance's private upper disk. */
  readonly overlay_device_serial?: string;
}

/** What a boot needs: the disks to give the VMM, the config section, the upper disks. */
export interface BootVolumes {
  readonly disks: { path: string; readonly: boolean; serial: string }[];
  readonly guest: GuestVolume[];
  /** Private upper disks to create (empty ext4) when missing. */
  readonly uppers: { path: string; bytes: number }[];
}

const MIB = 1024 * 1024;
/** QEMU's microvm has 24 virtio-mmio slots; Vessel's own devices take up to 6. */
const MAX_VOLUME_DISKS = 16;
/** Tar headers and padding on top of the content: the stream budget allows this much more. */
const TAR_SLACK = 64 * MIB;

export class VolumeManager {
  readonly repo: VolumesRepo;
  private readonly paths: Paths;
  private readonly log: Logger;
  /** Journal replays of one volume run one at a time. */
  private readonly replayLock = new KeyedMutex();

  constructor(options: VolumeManagerOptions) {
    this.repo = new VolumesRepo(options.db);
    this.paths = options.paths;
    this.log = options.logger;
  }

  get dir(): string {
    return path.join(this.paths.dataDir, 'volumes');
  }

  private get stagingDir(): string {
    return path.join(this.dir, '.staging');
  }

  /** The volume's ext4 disk file. */
  disk(volumeId: string): string {
    return path.join(this.dir, `${volumeId}.ext4`);
  }

  /** An instance's private upper disk over volume `volumeId` (in the instance's directory). */
  upperDisk(instanceId: string, volumeId: string): string {
    return this.paths.instanceFile(instanceId, `volume-${volumeId}.upper.ext4`);
  }

  /** Create the directories; remove half-built volumes a crash left behind. */
  async init(): Promise<void> {
    await ensureDir(this.dir, 0o700);
    await fs.rm(this.stagingDir, { recursive: true, force: true });
  }

  list(filter: { tags?: Tags | undefined } = {}): Volume[] {
    const all = this.repo.attachments();
    return this.repo
      .list()
      .filter((v) => matchTags(v.tags, filter.tags))
      .map((v) =>
        view(
          v,
          all.filter((a) => a.volume_id === v.id),
        ),
      );
  }

  get(idOrName: string): Volume {
    const v = this.row(idOrName);
    return view(v, this.repo.attachments({ volume_id: v.id }));
  }

  row(idOrName: string): VolumeRow {
    const v = this.repo.get(idOrName);
    if (!v)
      throw new VesselError('not_found', `volume "${idOrName}" not found`, {
        details: { volume: idOrName },
      });
    return v;
  }

  /** An empty ext4 volume. */
  async create(req: { id?: string; name: string; size_gb: number; tags?: Tags }): Promise<Volume> {
    const bytes = this.precheck(req);
    const id = req.id ?? newId();
    return this.build(id, async (staging) => {
      const file = path.join(staging, 'disk.ext4');
      await sparseFile(file, bytes);
      await mkfs(file, null);
      return file;
    }).then((file) => this.publish(id, req, file));
  }

  /**
   * A volume whose content is a tar, tar.gz or tar.zst stream (format by
   * magic bytes). Entries go through the image layer applier (nothing outside
   * the volume, no device nodes) into a staging directory, then
   * `mkfs.ext4 -d` builds the disk from it. Content larger than `size_gb` is
   * `volume_too_small`; a hostile entry is `invalid_archive`. A failure
   * leaves nothing behind.
   */
  async createFromArchive(
    body: Readable,
    req: { name: string; size_gb: number; tags?: Tags },
  ): Promise<Volume> {
    let bytes: number;
    try {
      bytes = this.precheck(req);
    } catch (err) {
      body.destroy();
      throw err;
    }
    const id = newId();
    const file = await this.build(id, async (staging) => {
      const root = path.join(staging, 'root');
      await fs.mkdir(root, { mode: 0o755 });
      const { head, stream } = await peekHead(body, 512);
      try {
        detectArchive(head);
      } catch (err) {
        body.destroy();
        throw err;
      }
      try {
        await applyLayer(stream, {
          rootfs: root,
          maxBytes: bytes + TAR_SLACK,
          canChown: process.getuid?.() === 0,
        });
      } catch (err) {
        throw archiveError(err, req.size_gb);
      }
      await fs.chmod(root, 0o755);
      const disk = path.join(staging, 'disk.ext4');
      await sparseFile(disk, bytes);
      await mkfs(disk, root, req.size_gb);
      return disk;
    });
    return this.publish(id, req, file);
  }

  /** Delete an unattached volume (`volume_in_use` while attached). */
  async delete(idOrName: string): Promise<void> {
    const v = this.row(idOrName);
    // Check and delete in one synchronous step: no attach can slip in between.
    const attached = this.repo.attachments({ volume_id: v.id });
    if (attached.length > 0) {
      throw new VesselError(
        'volume_in_use',
        `volume "${v.name}" is attached to ${attached.length === 1 ? 'instance' : 'instances'} ${attached
          .map((a) => a.instance_id)
          .join(
            ', ',
          )}; detach it or delete ${attached.length === 1 ? 'that instance' : 'those instances'} first`,
        { details: { volume: v.name, instances: attached.map((a) => a.instance_id) } },
      );
    }
    this.repo.delete(v.id);
    await fs.rm(this.disk(v.id), { force: true });
  }

  /**
   * Resolve names to ids and check each request on its own (mount path,
   * sizes). No lock needed; {@link attach} checks again against the others.
   */
  resolve(mounts: readonly VolumeMountRequest[]): ResolvedMount[] {
    return mounts.map((m) => {
      const v = this.row(m.volume_id);
      checkMountPath(m.mount_path);
      const overlay = m.overlay === true;
      if (!overlay && m.overlay_size !== undefined) {
        throw new VesselError('invalid_argument', 'overlay_size is only for overlay: true', {
          details: { field: 'overlay_size' },
        });
      }
      const size = overlay
        ? m.overlay_size === undefined
          ? volumeBytes(v.size_gb)
          : parseSize(m.overlay_size, 'overlay_size')
        : null;
      if (size !== null && size < 16 * MIB) {
        throw new VesselError('invalid_argument', `overlay_size must be at least 16 MiB`, {
          details: { field: 'overlay_size' },
        });
      }
      return {
        volume_id: v.id,
        mount_path: m.mount_path,
        readonly: overlay ? true : m.readonly === true,
        overlay,
        overlay_size: size,
      };
    });
  }

  /**
   * Record `mounts` on `instanceId` after checking them against every
   * attachment (one read-write, or any number read-only). Synchronous: call
   * it inside the instance reservation, after the instance row exists.
   */
  attach(instanceId: string, mounts: readonly ResolvedMount[]): void {
    this.check(instanceId, mounts);
    const rows: AttachmentRow[] = mounts.map((m) => ({ ...m, instance_id: instanceId }));
    this.repo.attach(rows);
  }

  /** The check of {@link attach} alone (call inside the reservation, before inserting the row). */
  check(instanceId: string, mounts: readonly ResolvedMount[]): void {
    for (const m of mounts) this.row(m.volume_id); // deleted since resolve()?
    const disks = [...this.attachmentsOf(instanceId), ...mounts].reduce(
      (n, a) => n + (a.overlay ? 2 : 1),
      0,
    );
    if (disks > MAX_VOLUME_DISKS) {
      throw new VesselError(
        'invalid_argument',
        `an instance takes at most ${MAX_VOLUME_DISKS} volume disks (an overlay attachment uses two); this would be ${disks}`,
        { details: { field: 'volumes' } },
      );
    }
    checkAttachments(
      this.repo.attachments(),
      mounts.map((m) => ({ ...m, instance_id: instanceId })),
      (id) => this.repo.get(id)?.name ?? id,
    );
  }

  /** Remove one attachment (and the instance's private upper disk of it). */
  async detach(instanceId: string, volumeIdOrName: string): Promise<void> {
    const v = this.row(volumeIdOrName);
    if (!this.repo.detach(v.id, instanceId)) {
      throw new VesselError(
        'not_found',
        `volume "${v.name}" is not attached to instance ${instanceId}`,
        { details: { volume: v.name } },
      );
    }
    await fs.rm(this.upperDisk(instanceId, v.id), { force: true });
  }

  /** The attachments of one instance, by mount path. */
  attachmentsOf(instanceId: string): AttachmentRow[] {
    return this.repo
      .attachments({ instance_id: instanceId })
      .sort((a, b) => (a.mount_path < b.mount_path ? -1 : 1));
  }

  /**
   * Fork support, step 1 (before copying anything): a read-write attachment
   * cannot be shared with a fork — `volume_in_use` naming the volume.
   * Returns the private upper disks to copy (from the source's directory to the fork's).
   */
  forkPlan(sourceId: string, forkId: string): { from: string; to: string }[] {
    const atts = this.attachmentsOf(sourceId);
    const rw = atts.find(writesVolume);
    if (rw) {
      const name = this.repo.get(rw.volume_id)?.name ?? rw.volume_id;
      throw new VesselError(
        'volume_in_use',
        `volume "${name}" is attached read-write at ${rw.mount_path}; a fork cannot share it ` +
          `(detach it first, or attach it read-only or as an overlay)`,
        { details: { volume: name, mount_path: rw.mount_path } },
      );
    }
    return atts
      .filter((a) => a.overlay)
      .map((a) => ({
        from: this.upperDisk(sourceId, a.volume_id),
        to: this.upperDisk(forkId, a.volume_id),
      }));
  }

  /**
   * Fork support, step 2 (inside the reservation, after the fork's row is
   * inserted): the fork gets the source's attachments; the check runs again.
   */
  forkAttach(sourceId: string, forkId: string): void {
    this.forkPlan(sourceId, forkId); // the source may have changed since
    this.attach(
      forkId,
      this.attachmentsOf(sourceId).map((a) => ({
        volume_id: a.volume_id,
        mount_path: a.mount_path,
        readonly: a.readonly,
        overlay: a.overlay,
        overlay_size: a.overlay_size,
      })),
    );
  }

  /**
   * What a boot of `instanceId` needs. Disks are in mount-path order, so a
   * restore from standby sees the same devices as the boot it saved.
   */
  bootVolumes(instanceId: string): BootVolumes {
    const out: BootVolumes = { disks: [], guest: [], uppers: [] };
    this.attachmentsOf(instanceId).forEach((a, i) => {
      const serial = `vessel-vol-${i}`;
      out.disks.push({ path: this.disk(a.volume_id), readonly: a.readonly, serial });
      if (a.overlay) {
        const upper = this.upperDisk(instanceId, a.volume_id);
        const upperSerial = `vessel-volo-${i}`;
        out.disks.push({ path: upper, readonly: false, serial: upperSerial });
        out.uppers.push({ path: upper, bytes: a.overlay_size ?? MIB * 1024 });
        out.guest.push({
          device_serial: serial,
          mount_path: a.mount_path,
          readonly: false,
          overlay_device_serial: upperSerial,
        });
      } else {
        out.guest.push({ device_serial: serial, mount_path: a.mount_path, readonly: a.readonly });
      }
    });
    return out;
  }

  /**
   * Everything a boot needs, ready: a volume to be read (read-only or
   * overlay) whose journal a read-write user left unreplayed is replayed
   * here (`e2fsck -E journal_only`), since the guest cannot write to a
   * read-only disk; missing private upper disks are created.
   */
  async prepareBoot(instanceId: string): Promise<BootVolumes> {
    const b = this.bootVolumes(instanceId);
    for (const a of this.attachmentsOf(instanceId)) {
      if (!writesVolume(a)) await this.replayJournal(a.volume_id);
    }
    await this.ensureUppers(b);
    return b;
  }

  private async replayJournal(volumeId: string): Promise<void> {
    const disk = this.disk(volumeId);
    await this.replayLock.run(volumeId, async () => {
      if (!(await needsRecovery(disk))) return;
      const r = await run('e2fsck', ['-E', 'journal_only', '-p', disk], { allowFailure: true });
      // 0: clean, 1: errors corrected (the replay); more: it could not.
      if (r.code > 1) {
        throw new VesselError(
          'tool_failed',
          `volume ${volumeId}: replaying its journal failed (e2fsck exit ${r.code}): ${r.stderr.trim().split('\n').slice(-2).join('; ')}`,
        );
      }
      this.log.info({ volume: volumeId }, 'replayed the journal a read-write user left');
    });
  }

  /** Create the missing private upper disks of a boot (empty, sparse ext4). */
  async ensureUppers(b: BootVolumes): Promise<void> {
    for (const u of b.uppers) {
      try {
        await fs.access(u.path);
      } catch {
        const tmp = `${u.path}.tmp`;
        await ensureDir(path.dirname(u.path), 0o700);
        await fs.rm(tmp, { force: true });
        await sparseFile(tmp, u.bytes);
        await mkfs(tmp, null);
        await fs.rename(tmp, u.path);
      }
    }
  }

  private precheck(req: { id?: string; name: string; size_gb: number }): number {
    checkVolumeName(req.name);
    const bytes = volumeBytes(req.size_gb);
    if (req.id !== undefined && this.repo.get(req.id))
      throw new VesselError('already_exists', `a volume with id "${req.id}" already exists`);
    if (this.repo.get(req.name)) {
      throw new VesselError('already_exists', `a volume named "${req.name}" already exists`, {
        details: { name: req.name },
      });
    }
    return bytes;
  }

  /** Run `fn` in a private staging directory that is always removed afterwards. */
  private async build(id: string, fn: (staging: string) => Promise<string>): Promise<string> {
    const staging = path.join(this.stagingDir, id);
    await ensureDir(this.stagingDir, 0o700);
    await fs.mkdir(staging, { mode: 0o700 });
    let file: string | undefined;
    try {
      const built = await fn(staging);
      file = path.join(this.stagingDir, `${id}.ext4`);
      await fs.rename(built, file);
      return file;
    } catch (err) {
      if (file) await fs.rm(file, { force: true });
      throw toVesselError(err, 'building the volume');
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
  }

  /** Record the volume and move its disk into place; the name is checked again here. */
  private async publish(
    id: string,
    req: { name: string; size_gb: number; tags?: Tags },
    built: string,
  ): Promise<Volume> {
    const row: VolumeRow = {
      id,
      name: req.name,
      size_gb: req.size_gb,
      ...(req.tags ? { tags: req.tags } : {}),
      created_at: new Date().toISOString(),
    };
    try {
      await fs.rename(built, this.disk(id));
      try {
        this.repo.insert(row);
      } catch (err) {
        await fs.rm(this.disk(id), { force: true });
        if (errnoCode(err)?.startsWith('SQLITE_CONSTRAINT')) {
          throw new VesselError('already_exists', `a volume named "${req.name}" already exists`, {
            details: { name: req.name },
          });
        }
        throw err;
      }
    } finally {
      await fs.rm(built, { force: true });
    }
    this.log.info({ volume: row.name, id, size_gb: row.size_gb }, 'volume created');
    return view(row, []);
  }
}

/** ext4 superblock: magic 0xEF53 at 1024+0x38, `RECOVER` (0x4) in s_feature_incompat at 1024+0x60. */
async function needsRecovery(disk: string): Promise<boolean> {
  const fh = await fs.open(disk, 'r');
  try {
    const buf = Buffer.alloc(1024);
    const { bytesRead } = await fh.read(buf, 0, 1024, 1024);
    if (bytesRead < 0x64 || buf.readUInt16LE(0x38) !== 0xef53) return false;
    return (buf.readUInt32LE(0x60) & 0x4) !== 0;
  } finally {
    await fh.close();
  }
}

function newId(): string {
  return `vol-${randomBytes(6).toString('hex')}`;
}

function view(v: VolumeRow, atts: readonly AttachmentRow[]): Volume {
  return {
    id: v.id,
    name: v.name,
    size_gb: v.size_gb,
    ...(v.tags ? { tags: { ...v.tags } } : {}),
    attachments: atts.map((a) => ({
      instance_id: a.instance_id,
      mount_path: a.mount_path,
      readonly: a.readonly,
      ...(a.overlay ? { overlay: true } : {}),
    })),
    created_at: v.created_at,
  };
}

async function sparseFile(file: string, bytes: number): Promise<void> {
  const fh = await fs.open(file, 'wx', 0o600);
  try {
    await fh.truncate(bytes);
  } finally {
    await fh.close();
  }
}

/** mkfs.ext4, from `root` when given; "does not fit" is `volume_too_small`. */
async function mkfs(file: string, root: string | null, sizeGb?: number): Promise<void> {
  const r = await run(
    'mkfs.ext4',
    [
      '-q',
      '-F',
      '-m',
      '0',
      '-L',
      'vessel-volume',
      '-E',
      'lazy_itable_init=1,lazy_journal_init=1',
      ...(root ? ['-d', root] : []),
      file,
    ],
    { allowFailure: true },
  );
  if (r.code === 0) return;
  const msg = r.stderr.trim().split('\n').slice(-3).join('; ');
  if (root && /allocate|no space|not enough|too many|could not/i.test(r.stderr)) {
    throw new VesselError(
      'volume_too_small',
      `the archive's content does not fit in ${sizeGb} GiB (mkfs.ext4: ${msg})`,
      { details: { size_gb: sizeGb } },
    );
  }
  throw new VesselError('tool_failed', `mkfs.ext4 failed (exit ${r.code}): ${msg}`);
}

/** Layer applier errors, in the words of a volume archive. */
function archiveError(err: unknown, sizeGb: number): VesselError {
  if (isVesselError(err, 'layer_too_large')) {
    return new VesselError(
      'volume_too_small',
      `the archive's content is larger than the volume (${sizeGb} GiB)`,
      { cause: err, details: { size_gb: sizeGb } },
    );
  }
  if (isVesselError(err, 'unsafe_layer')) {
    return new VesselError(
      'invalid_archive',
      `archive refused: ${err.message.replace(/^layer /, '')}`,
      { cause: err, ...(err.details ? { details: err.details } : {}) },
    );
  }
  if (isVesselError(err, 'disk_full')) return err;
  return toVesselError(err, 'unpacking the archive');
}
