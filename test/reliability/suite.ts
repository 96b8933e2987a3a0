/**
 * The reliability suite's knobs and its figures. Each test runs at CI size by default
 * (inside `npm test`) and at full size with `VESSEL_RELIABILITY=full`
 * (`npm run test:reliability`). Every figure is printed as one `FIGURE name=value unit`
 * line and, when `VESSEL_FIGURES=file` is set, appended to that file as a JSON line, so
 * a release can collect them.
 */
import { appendFileSync } from 'node:fs';

export const FULL = process.env.VESSEL_RELIABILITY === 'full';

/** `ci` normally, `full` under `VESSEL_RELIABILITY=full`. */
export function size(ci: number, full: number): number {
  return FULL ? full : ci;
}

/** Print (and record) one measured figure of the suite. */
export function figure(name: string, value: number | string, unit = ''): void {
  const line = `FIGURE ${name}=${value}${unit ? ` ${unit}` : ''}`;
  process.stdout.write(`${line}\n`);
  const file = process.env.VESSEL_FIGURES;
  if (file) {
    appendFileSync(
      file,
      `${JSON.stringify({ name, value, unit, full: FULL, at: new Date().toISOString() })}\n`,
    );
  }
}
