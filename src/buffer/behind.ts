import type { CursorState } from './rows.ts';

/** Seqs `lo < seq <= hi` of one bridge's log; `lo` is -Infinity for "every seq up to hi". */
export interface SeqRange {
  readonly lo: number;
  readonly hi: number;
}

/**
 * The seqs a sink has confirmed, as at most two ranges: everything up to its cursor, and under
 * live-first replay the live part it confirmed after its mark, `(max(seq, liveMark), liveSeq]`.
 * The messages of the log in these ranges are the sink's "behind"; the rest are its pending.
 */
export function confirmedRanges(state: CursorState): SeqRange[] {
  const { seq, liveMark, liveSeq } = state;
  if (liveMark === null || liveSeq === null) return [{ lo: Number.NEGATIVE_INFINITY, hi: seq }];
  const from = Math.max(seq, liveMark);
  if (liveSeq <= from) return [{ lo: Number.NEGATIVE_INFINITY, hi: seq }];
  if (from === seq) return [{ lo: Number.NEGATIVE_INFINITY, hi: liveSeq }];
  return [
    { lo: Number.NEGATIVE_INFINITY, hi: seq },
    { lo: from, hi: liveSeq },
  ];
}

/**
 * The seqs confirmed in `after` but not in `before`: what a cursor move adds to a sink's
 * behind. Every move Ferry makes only confirms more (a cursor never goes back, a live part only
 * grows, and the end of a replay confirms the live part under the cursor); the other way round,
 * `newlyConfirmed(after, before)`, is what a move would take back, empty for those. A sink's
 * cursor never goes back, so the ranges are finite (each starts at or above `before.seq`).
 */
export function newlyConfirmed(before: CursorState, after: CursorState): SeqRange[] {
  let pieces = confirmedRanges(after);
  for (const old of confirmedRanges(before)) {
    pieces = pieces.flatMap((piece) => {
      const rest: SeqRange[] = [];
      if (piece.lo < old.lo) rest.push({ lo: piece.lo, hi: Math.min(piece.hi, old.lo) });
      if (piece.hi > old.hi) rest.push({ lo: Math.max(piece.lo, old.hi), hi: piece.hi });
      return rest.filter((r) => r.hi > r.lo);
    });
  }
  return pieces;
}

/** The seqs in both `a` and `b` (each a list of disjoint ranges). */
export function intersect(a: readonly SeqRange[], b: readonly SeqRange[]): SeqRange[] {
  const out: SeqRange[] = [];
  for (const x of a) {
    for (const y of b) {
      const lo = Math.max(x.lo, y.lo);
      const hi = Math.min(x.hi, y.hi);
      if (hi > lo) out.push({ lo, hi });
    }
  }
  return out;
}

/** Seqs as ranges of consecutive ones, in order, each once. */
export function runs(seqs: readonly number[]): SeqRange[] {
  const sorted = [...new Set(seqs)].sort((a, b) => a - b);
  const out: SeqRange[] = [];
  for (const seq of sorted) {
    const last = out.at(-1);
    if (last !== undefined && last.hi === seq - 1) out[out.length - 1] = { lo: last.lo, hi: seq };
    else out.push({ lo: seq - 1, hi: seq });
  }
  return out;
}
