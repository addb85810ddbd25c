import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BuildfleetError, exitCodeFor } from '../errors.js';
import { BuildOutput } from './build-output.js';

const line = (event: object) => JSON.stringify(event) + '\r\n';

test('passes the build text on, follows the steps and takes the image id, whatever the chunking', () => {
  const answer = [
    line({ stream: 'Step 1/3 : FROM base' }),
    line({ stream: '\n' }),
    line({ stream: ' ---> 1234\n' }),
    line({ stream: 'Step 2/3 : RUN echo hi\n' }),
    line({ stream: 'hi\n' }),
    line({ stream: 'Step 3/3 : CMD ["sh"]\n' }),
    line({ aux: { ID: 'sha256:' + 'ab'.repeat(32) } }),
    line({ stream: 'Successfully built abababab\n' }),
  ].join('');
  for (const size of [1, 7, answer.length]) {
    let log = '';
    const output = new BuildOutput((text) => (log += text));
    for (let i = 0; i < answer.length; i += size) output.push(answer.slice(i, i + size));
    assert.deepEqual(output.end(), { imageId: 'sha256:' + 'ab'.repeat(32), steps: 3 });
    assert.match(log, /Step 2\/3 : RUN echo hi\nhi\n/);
    assert.deepEqual(output.currentStep, { number: 3, of: 3, instruction: 'CMD ["sh"]' });
  }
});

test('an error event is one build error line naming the step that failed', () => {
  const output = new BuildOutput();
  output.push(line({ stream: 'Step 1/4 : FROM base\n' }) + line({ stream: 'Step 2/4 : RUN false\n' }));
  assert.throws(
    () => output.push(line({ errorDetail: { code: 1, message: "The command '/bin/sh -c false' returned\na non-zero code: 1" }, error: 'x' })),
    (err: unknown) =>
      err instanceof BuildfleetError &&
      err.kind === 'build' &&
      exitCodeFor[err.kind] === 10 &&
      err.message === "build failed at step 2/4 (RUN false): The command '/bin/sh -c false' returned a non-zero code: 1",
  );
});

test('a long instruction is cut; an answer without an image id is a build failure', () => {
  const output = new BuildOutput();
  output.push(line({ stream: `Step 5/9 : RUN ${'x'.repeat(200)}\n` }));
  assert.match(output.where(), /^ at step 5\/9 \(RUN x{73}\.\.\.\)$/);
  assert.throws(() => output.end(), /build failed at step 5\/9 .*without an image id/);
});
