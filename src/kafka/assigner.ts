import { AssignerProtocol, type Assigner, type PartitionAssigner } from 'kafkajs';

/** Protocol name of the split assigner (every member of a job's consumer group must use it). */
export const SPLIT_ASSIGNER_NAME = 'streamstate-splits';

/** What a source subtask tells the group leader when it joins: the partitions its splits name. */
export interface SplitClaim {
  /** Newer attempts win: a member left behind by a crashed attempt loses its partitions to the new one. */
  readonly epoch: number;
  readonly subtaskIndex: number;
  /** topic -> partitions. */
  readonly partitions: Readonly<Record<string, readonly number[]>>;
}

export function encodeClaim(claim: SplitClaim): Buffer {
  return Buffer.from(JSON.stringify(claim));
}

/** A member that is not a streamstate source subtask (or sends something else) claims nothing. */
export function decodeClaim(userData: Buffer | null | undefined): SplitClaim | null {
  if (!userData || userData.length === 0) return null;
  try {
    const c = JSON.parse(userData.toString('utf8')) as Partial<SplitClaim>;
    if (
      typeof c.epoch !== 'number' ||
      typeof c.subtaskIndex !== 'number' ||
      typeof c.partitions !== 'object' ||
      c.partitions === null
    )
      return null;
    return c as SplitClaim;
  } catch {
    return null;
  }
}

/**
 * Assigns each member exactly the partitions it claims: KafkaJS has no manual assignment, so the
 * split plan (planSplits, run by every subtask on the same inputs) travels to the group leader in
 * the members' metadata and comes back as the assignment. A partition two members claim goes to the
 * newer epoch (then the lower subtask index); members that claim nothing get nothing.
 */
export function assignClaims(
  members: readonly { memberId: string; claim: SplitClaim | null }[],
): Map<string, Record<string, number[]>> {
  const owner = new Map<string, { memberId: string; claim: SplitClaim }>();
  for (const m of members) {
    if (!m.claim) continue;
    for (const [topic, partitions] of Object.entries(m.claim.partitions)) {
      for (const p of partitions) {
        const key = `${topic}\u0000${p}`;
        const cur = owner.get(key);
        const wins =
          !cur ||
          m.claim.epoch > cur.claim.epoch ||
          (m.claim.epoch === cur.claim.epoch &&
            (m.claim.subtaskIndex < cur.claim.subtaskIndex ||
              (m.claim.subtaskIndex === cur.claim.subtaskIndex && m.memberId < cur.memberId)));
        if (wins) owner.set(key, { memberId: m.memberId, claim: m.claim });
      }
    }
  }
  const out = new Map<string, Record<string, number[]>>(members.map((m) => [m.memberId, {}]));
  for (const [key, { memberId }] of owner) {
    const [topic, p] = key.split('\u0000');
    const assignment = out.get(memberId)!;
    (assignment[topic] ??= []).push(Number(p));
  }
  for (const a of out.values()) for (const list of Object.values(a)) list.sort((x, y) => x - y);
  return out;
}

/** The KafkaJS partition assigner of a source subtask that claims `claim`. */
export function splitAssigner(claim: SplitClaim): PartitionAssigner {
  return (): Assigner => ({
    name: SPLIT_ASSIGNER_NAME,
    version: 1,
    async assign({ members }) {
      const decoded = members.map((m) => {
        const meta = AssignerProtocol.MemberMetadata.decode(m.memberMetadata);
        return { memberId: m.memberId, claim: decodeClaim(meta?.userData) };
      });
      const assignment = assignClaims(decoded);
      return members.map((m) => ({
        memberId: m.memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({
          version: 1,
          assignment: assignment.get(m.memberId) ?? {},
          userData: Buffer.alloc(0),
        }),
      }));
    },
    protocol({ topics }) {
      return {
        name: SPLIT_ASSIGNER_NAME,
        metadata: AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData: encodeClaim(claim) }),
      };
    },
  });
}
