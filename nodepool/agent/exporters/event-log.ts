import { pino, destination, stdTimeFunctions, type Logger } from 'pino';
import type { Exporter } from '../exporter.js';
import type { EventFields } from '../problems.js';

/** events.jsonl: one JSON line per event (`{"level":30,"time":ISO,"node":NAME,"event":NAME,...fields}`), written synchronously. */
export class EventLogExporter implements Exporter {
  private readonly log: Logger;

  constructor(path: string, node: string) {
    this.log = pino({ base: { node }, timestamp: stdTimeFunctions.isoTime }, destination({ dest: path, sync: true, mkdir: true }));
  }

  event(name: string, fields: EventFields): void {
    this.log.info({ event: name, ...fields });
  }
}
