import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeCase, restorePristine, runCase, runFormat, type RestoreMode } from './campaign.js';
import { buildFamily, familyOf, fixtureFor, type FamilyFixture, type FormatName } from './fixtures.js';
import { MUTATIONS, type MutationKind } from './mutations.js';

/** Seed of the `npm test` campaign; CORRUPTION_SEED=<n> runs another one. */
const BASE_SEED = process.env.CORRUPTION_SEED === undefined ? 0x5eed : Number(process.env.CORRUPTION_SEED);

/** CORRUPTION_REPLAY=<format>:<mutation>:<seed> runs just that case (as printed by a failure). */
function replayRequest(): { format: FormatName; mutation: MutationKind; seed: number } | null {
  const spec = process.env.CORRUPTION_REPLAY;
  if (spec === undefined || spec === '') return null;
  const [format, mutation, seed] = spec.split(':');
  if (!MUTATIONS.includes(mutation as MutationKind) || seed === undefined)
    throw new Error(`CORRUPTION_REPLAY=${spec}: expected <format>:<mutation>:<seed>`);
  return { format: format as FormatName, mutation: mutation as MutationKind, seed: Number(seed) };
}

/**
 * The `npm test` corruption suite of one backend family: a control restore of the undamaged
 * snapshot per restore mode, then `count` damaged copies per format (every mutation kind gets an
 * equal share), each of which must end in a typed error or a correct restore.
 */
export function describeCorruptionSuite(formats: Readonly<Partial<Record<FormatName, number>>>): void {
  const names = Object.keys(formats) as FormatName[];
  const family = familyOf(names[0]);
  const replay = replayRequest();
  describe(`corruption suite (${family} family)`, () => {
    let fam: FamilyFixture | undefined;
    beforeAll(async () => {
      fam = await buildFamily(family);
    }, 60_000);
    afterAll(async () => {
      await fam?.cleanup();
    });

    if (replay !== null) {
      it.runIf(names.includes(replay.format))(
        `replays ${replay.format} ${replay.mutation} seed ${replay.seed}`,
        async () => {
          const o = await runCase(fixtureFor(replay.format, fam!), replay.seed, { only: replay.mutation });
          console.log(describeCase(o));
          expect(o.verdict, describeCase(o)).not.toBe('failure');
        },
      );
      return;
    }

    for (const format of names) {
      const count = formats[format]!;
      it(`${format}: the undamaged snapshot restores to the expected state (every restore mode, parallelism 1-3)`, async () => {
        const fixture = fixtureFor(format, fam!);
        const modes: RestoreMode[] = fixture.pointer.includes('/chk-')
          ? ['latest', 'claim', 'no-claim']
          : ['claim', 'no-claim'];
        for (const [i, mode] of modes.entries()) {
          expect(await restorePristine(fixture, mode, 1 + (i % 3)), `${format} ${mode}`).toBe(fixture.expected);
        }
      });

      it(`${format}: ${count} damaged snapshots each end in a typed error or a correct restore`, async () => {
        const fixture = fixtureFor(format, fam!);
        const summary = await runFormat(fixture, BASE_SEED, count, { cycleMutations: true, timeoutMs: 15_000 });
        const failures = summary.failureCases.map(describeCase);
        expect(failures, failures.join('\n')).toEqual([]);
        expect(summary.cases).toBe(count);
        // Most damage must be caught: a suite where everything "restores correctly" tests nothing.
        expect(summary.typed).toBeGreaterThan(count / 2);
        for (const kind of MUTATIONS) expect(summary.byMutation[kind].cases, kind).toBeGreaterThan(0);
        console.log(
          `[corruption] ${format}: ${summary.cases} cases (seed ${BASE_SEED}), ${summary.typed} typed errors ${JSON.stringify(summary.typedByCode)}, ` +
            `${summary.correct} correct restores, ${summary.failures} failures, ${Math.round(summary.ms)} ms`,
        );
      }, 120_000);
    }
  });
}
