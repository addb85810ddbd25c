/**
 * One-line descriptions of YAML and JSON parse errors, for error lines that name a file. The
 * parsers' own messages span lines (yaml appends a code frame; V8 quotes the text around the
 * bad token, newlines included), and an error line cut at the first newline loses what is wrong.
 */

export type ParseErrorPlace = { line: number; column: number; reason: string };

/** `line L, column C: REASON`, from an error thrown by yaml's `parse` or by `JSON.parse` of `text`. */
export function describeParseError(err: unknown, text: string): string {
  const { line, column, reason } = parseErrorPlace(err, text);
  return `line ${line}, column ${column}: ${reason}`;
}

export function parseErrorPlace(err: unknown, text: string): ParseErrorPlace {
  const message = err instanceof Error ? err.message : String(err);
  const yamlPlace = (err as { linePos?: Array<{ line: number; col: number }> }).linePos?.[0];
  if (yamlPlace) {
    // yaml: "REASON at line L, column C:\n\n<code frame>"
    const reason = message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    return { line: yamlPlace.line, column: yamlPlace.col, reason: oneLine(reason) };
  }
  const unexpected = /^Unexpected token '(.+?)', (\.\.\.)?"(.*)"(?:\.\.\.)? is not valid JSON$/s.exec(message);
  if (unexpected) {
    const [, token, cut, excerpt] = unexpected;
    return { ...lineAndColumn(text, unexpectedTokenOffset(text, token!, cut !== undefined, excerpt!)), reason: `Unexpected token '${token}'` };
  }
  const position = /at position (\d+)/.exec(message);
  const offset = position ? Number(position[1]) : text.length;
  const reason = message.replace(/ (?:in JSON )?at position \d+.*$/s, '');
  return { ...lineAndColumn(text, offset), reason: oneLine(reason) };
}

/**
 * V8 names no position for an unexpected token, only the text around it: CONTEXT characters on
 * each side, with "..." where it cut (json-parser.cc, kMaxContextCharacters). So the token
 * sits CONTEXT characters into a cut excerpt, or CONTEXT characters before the end of one taken
 * from the start of a longer text.
 */
const CONTEXT = 10;
function unexpectedTokenOffset(text: string, token: string, cutBefore: boolean, excerpt: string): number {
  if (cutBefore) {
    const start = text.indexOf(excerpt);
    return start < 0 ? text.length : start + CONTEXT;
  }
  if (excerpt.length < text.length) return Math.max(0, excerpt.length - CONTEXT);
  // A text too short to be cut is quoted whole: the token's first appearance is the best guess.
  return Math.max(0, text.indexOf(token));
}

/** 1-based line and column of a character offset. */
export function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split('\n');
  return { line: lines.length, column: lines[lines.length - 1]!.length + 1 };
}

/** The non-empty lines of `text`, trimmed and joined by a space. */
export function oneLine(text: string): string {
  return text
    .split('\n')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .join(' ');
}
