import { createHash } from 'node:crypto';
import path from 'node:path';

/** The data directory when neither `--data-dir` nor `VESSEL_DATA_DIR` names one. */
export const DEFAULT_DATA_DIR = '/var/lib/vessel';

/**
 * Every on-disk path Vessel uses, built in one place.
 *
 * ```
 * <data>/vessel.sock             API unix socket (mode 0660)
 * <data>/vessel.pid              PID file of the running daemon
 * <data>/vessel.db               SQLite store (WAL)
 * <data>/config.json             optional config file
 * <data>/credentials.json        optional registry credentials (docker config.json format)
 * <data>/logs/daemon.log         daemon log when started by the CLI
 * <data>/blobs/sha256/<hex>      content-addressed blobs shared by all images
 * <data>/blobs/incoming/         partial downloads, renamed into place once verified
 * <data>/images/<hex>/           one directory per manifest digest: rootfs.erofs | rootfs.ext4
 * <data>/images/.staging/        conversions in progress, published by rename
 * <data>/tmp/                    scratch space (imports)
 * <staging>/vessel-unpack-<key>/ layers being unpacked on tmpfs (images.unpack_staging_dir,
 *                                default /dev/shm); <key> from the data dir: never shared
 * <data>/kernels/<name>/<ver>/    kernel, module subset, cached initramfs (see kernels/)
 * <data>/instances/<id>/          overlay.ext4, config.disk, app.log, serial.log, vmm.log, sockets
 * <data>/volumes/<id>.ext4        volume disks (src/volumes/); volumes/.staging/ while being built
 * ```
 */
export class Paths {
  readonly dataDir: string;

  constructor(dataDir: string) {
    this.dataDir = path.resolve(dataDir);
  }

  get socket(): string {
    return path.join(this.dataDir, 'vessel.sock');
  }
  get pidFile(): string {
    return path.join(this.dataDir, 'vessel.pid');
  }
  get database(): string {
    return path.join(this.dataDir, 'vessel.db');
  }
  get configFile(): string {
    return path.join(this.dataDir, 'config.json');
  }
  get credentialsFile(): string {
    return path.join(this.dataDir, 'credentials.json');
  }
  get logsDir(): string {
    return path.join(this.dataDir, 'logs');
  }
  get daemonLog(): string {
    return path.join(this.logsDir, 'daemon.log');
  }
  get blobsDir(): string {
    return path.join(this.dataDir, 'blobs');
  }
  /** Directory holding blobs of one algorithm (only sha256 is accepted). */
  blobAlgoDir(algorithm: string): string {
    return path.join(this.blobsDir, algorithm);
  }
  blob(algorithm: string, hex: string): string {
    return path.join(this.blobAlgoDir(algorithm), hex);
  }
  get blobIncomingDir(): string {
    return path.join(this.blobsDir, 'incoming');
  }
  get imagesDir(): string {
    return path.join(this.dataDir, 'images');
  }
  /** The published directory of one image, keyed by manifest digest hex. */
  imageDir(digestHex: string): string {
    return path.join(this.imagesDir, digestHex);
  }
  imageDisk(digestHex: string, format: 'erofs' | 'ext4'): string {
    return path.join(this.imageDir(digestHex), `rootfs.${format}`);
  }
  get imageStagingDir(): string {
    return path.join(this.imagesDir, '.staging');
  }
  get tmpDir(): string {
    return path.join(this.dataDir, 'tmp');
  }
  /** This data dir's private unpack staging directory under `parent` (a tmpfs such as /dev/shm). */
  unpackStagingDir(parent: string): string {
    const key = createHash('sha256').update(this.dataDir).digest('hex').slice(0, 16);
    return path.join(parent, `vessel-unpack-${key}`);
  }
  get buildsDir(): string {
    return path.join(this.dataDir, 'builds');
  }
  /** A build's directory: its context, events log and scratch space. */
  buildDir(id: string): string {
    return path.join(this.buildsDir, id);
  }
  get kernelsDir(): string {
    return path.join(this.dataDir, 'kernels');
  }
  get instancesDir(): string {
    return path.join(this.dataDir, 'instances');
  }
  instanceDir(id: string): string {
    return path.join(this.instancesDir, id);
  }
  /** A file inside an instance's directory (`overlay.ext4`, `app.log`, `qmp.sock`, ...). */
  instanceFile(id: string, name: string): string {
    return path.join(this.instanceDir(id), name);
  }
}
