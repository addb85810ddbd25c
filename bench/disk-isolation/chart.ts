import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderSvg } from '../time-to-ready/chart.js';
import { chartSpec, markdown, type DiskIsolationReport } from './report.js';

/**
 * Writes the report for people into DIR: report.md, report.json, disk-isolation.svg and .png,
 * rendered as time-to-ready's chart is (vega-lite -> Vega -> SVG, resvg -> PNG; loaded only here).
 */
export async function writeDiskIsolationReport(report: DiskIsolationReport, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const svg = await renderSvg(chartSpec(report));
  const { Resvg } = await import('@resvg/resvg-js');
  const png = new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true } }).render().asPng();
  const files = { 'report.md': markdown(report), 'report.json': JSON.stringify(report, null, 2) + '\n', 'disk-isolation.svg': svg, 'disk-isolation.png': png };
  const written: string[] = [];
  for (const [name, content] of Object.entries(files)) {
    // Whole or not at all: written beside, then renamed over.
    const path = join(dir, name);
    await writeFile(`${path}.${process.pid}.tmp`, content);
    await rename(`${path}.${process.pid}.tmp`, path);
    written.push(path);
  }
  return written;
}
