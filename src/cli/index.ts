export { runCli, type CliDeps, type DaemonFlags } from './main.js';
