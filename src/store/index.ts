export { openDatabase, schemaVersion, type Db } from './db.js';
export { MIGRATIONS, type Migration } from './migrations.js';
export * from './images-repo.js';
export * from './instances-repo.js';
export * from './ingresses-repo.js';
export * from './snapshots-repo.js';
export * from './builds-repo.js';
