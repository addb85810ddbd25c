import { BuildfleetError } from '../errors.js';

/**
 * The engine's build answer (POST /build, the classic builder): one JSON object a line, e.g.
 * `{"stream":"Step 2/5 : RUN make\n"}`, `{"aux":{"ID":"sha256:..."}}`, and on failure
 * `{"errorDetail":{"message":"The command '/bin/sh -c make' returned a non-zero code: 2"}}`.
 * Pure: fed text as it arrives, it passes the log text on, remembers the step that runs and the
 * image id, and turns an error event into one line that names the failed step.
 */

export type BuildStep = { number: number; of: number; instruction: string };

type BuildEvent = { stream?: string; status?: string; aux?: { ID?: string }; error?: string; errorDetail?: { message?: string } };

const STEP = /^Step (\d+)\/(\d+) : (.*)$/m;
const MAX_INSTRUCTION = 80;

export class BuildOutput {
  private buffered = '';
  private step: BuildStep | undefined;
  private id: string | undefined;
  private steps = 0;

  /** `log` gets the build's own text (RUN output, step lines), as it comes. */
  constructor(private readonly log: (text: string) => void = () => {}) {}

  /** Feeds a chunk of the answer; throws the build's failure (kind `build`) when an error event comes. */
  push(chunk: string): void {
    this.buffered += chunk;
    const lines = this.buffered.split('\n');
    this.buffered = lines.pop() ?? '';
    for (const line of lines) this.handle(line);
  }

  /** The answer ended: its image id, or the reason there is none. */
  end(): { imageId: string; steps: number } {
    this.handle(this.buffered);
    this.buffered = '';
    if (!this.id) {
      throw new BuildfleetError('build', `build failed${this.where()}: the engine ended the build without an image id`);
    }
    return { imageId: this.id, steps: this.steps };
  }

  /** The step that ran last, for errors that arrive outside the stream (a connection lost). */
  get currentStep(): BuildStep | undefined {
    return this.step;
  }

  /** " at step 3/5 (RUN false)", or nothing before the first step. */
  where(): string {
    if (!this.step) return '';
    const instruction = this.step.instruction.length > MAX_INSTRUCTION ? `${this.step.instruction.slice(0, MAX_INSTRUCTION - 3)}...` : this.step.instruction;
    return ` at step ${this.step.number}/${this.step.of} (${instruction})`;
  }

  private handle(line: string): void {
    if (line.trim() === '') return;
    let event: BuildEvent;
    try {
      event = JSON.parse(line) as BuildEvent;
    } catch {
      this.log(line + '\n');
      return;
    }
    if (event.error !== undefined || event.errorDetail !== undefined) {
      const message = (event.errorDetail?.message ?? event.error ?? 'unknown error').trim().split('\n').filter((l) => l.trim() !== '').join(' ');
      throw new BuildfleetError('build', `build failed${this.where()}: ${message}`);
    }
    if (event.aux?.ID) this.id = event.aux.ID;
    const text = event.stream ?? (event.status ? event.status + '\n' : undefined);
    if (text === undefined) return;
    const step = STEP.exec(text);
    if (step) {
      this.step = { number: Number(step[1]), of: Number(step[2]), instruction: step[3]!.trim() };
      this.steps = Math.max(this.steps, this.step.number);
    }
    this.log(text);
  }
}
