export { Daemon, type DaemonOptions } from './daemon.js';
export { runDaemonMain } from './main.js';
