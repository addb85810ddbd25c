import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chartSpec, markdown, type TimeToReadyReport } from './report.js';

/**
 * Writes a report for people into DIR: report.md, report.json, time-to-ready.svg and .png. The
 * chart is vega-lite compiled to Vega, rendered headless to SVG by Vega's View, and rasterised by
 * resvg; all three load only here, so the CLI does not pay for them at start-up.
 */
export async function writeReport(report: TimeToReadyReport, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const svg = await renderSvg(chartSpec(report));
  const { Resvg } = await import('@resvg/resvg-js');
  const png = new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true } }).render().asPng();
  const files: Array<[string, string | Buffer]> = [
    ['report.md', markdown(report)],
    ['report.json', JSON.stringify(report, null, 2) + '\n'],
    ['time-to-ready.svg', svg],
    ['time-to-ready.png', png],
  ];
  // Each file whole or not at all: written beside, then renamed.
  for (const [name, content] of files) {
    const temp = join(dir, `.${name}.${process.pid}.tmp`);
    await writeFile(temp, content);
    await rename(temp, join(dir, name));
  }
  return files.map(([name]) => join(dir, name));
}

export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(compile(spec as never).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
