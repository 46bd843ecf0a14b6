/**
 * The five namespace-merge situations (reference §10 items 14, 17, 19, 21): target ns1, sources
 * ns2 and ns3. The numbers add up to 165 whenever anything is present.
 */
export interface MergeCase {
  readonly name: string;
  /** A distinct key per case, so a leak between cases shows. */
  readonly key: number;
  readonly contents: Readonly<Record<string, readonly number[]>>;
  readonly all: readonly number[];
  readonly expectedSum: number | null;
}

const ALL = [11, 22, 33, 44, 55];

export const MERGE_CASES: readonly MergeCase[] = [
  {
    name: 'values spread over three namespaces',
    key: 101,
    contents: { ns1: [11, 22], ns2: [33], ns3: [44, 55] },
    all: ALL,
    expectedSum: 165,
  },
  {
    name: 'values in two namespaces, one source empty',
    key: 102,
    contents: { ns1: [11, 22, 33], ns3: [44, 55] },
    all: ALL,
    expectedSum: 165,
  },
  { name: 'nothing (all empty)', key: 103, contents: {}, all: [], expectedSum: null },
  { name: 'everything already in the target', key: 104, contents: { ns1: ALL }, all: ALL, expectedSum: 165 },
  { name: 'everything in one source', key: 105, contents: { ns3: ALL }, all: ALL, expectedSum: 165 },
];

export function sortedNumbers(xs: readonly number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}
