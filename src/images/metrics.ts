import { Counter, Histogram, Gauge, type Registry } from 'prom-client';

/** Prometheus metrics of the image subsystem, registered on the daemon's registry. */
export class ImageMetrics {
  readonly pulls: Counter<'result'>;
  readonly pullSeconds: Histogram<'phase'>;
  readonly blobBytes: Counter;
  readonly publishLockSeconds: Histogram;
  readonly active: Gauge;
  readonly unpacks: Counter<'location' | 'reason'>;

  constructor(registry: Registry) {
    this.pulls = new Counter({
      name: 'vessel_image_jobs_total',
      help: 'Image pulls and imports by result',
      labelNames: ['result'],
      registers: [registry],
    });
    this.pullSeconds = new Histogram({
      name: 'vessel_image_phase_seconds',
      help: 'Time spent per image phase (resolve, download, convert, total)',
      labelNames: ['phase'],
      buckets: [0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry],
    });
    this.blobBytes = new Counter({
      name: 'vessel_image_blob_bytes_total',
      help: 'Bytes of blobs downloaded from registries or imported',
      registers: [registry],
    });
    this.publishLockSeconds = new Histogram({
      name: 'vessel_image_publish_lock_hold_seconds',
      help: 'How long the image publish lock is held per acquisition',
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers: [registry],
    });
    this.unpacks = new Counter({
      name: 'vessel_image_unpacks_total',
      help: 'Images unpacked, by where (staging_dir = fast staging filesystem, data_dir) and why',
      labelNames: ['location', 'reason'],
      registers: [registry],
    });
    this.active = new Gauge({
      name: 'vessel_image_jobs_active',
      help: 'Image jobs pending, pulling or converting',
      registers: [registry],
    });
  }
}
