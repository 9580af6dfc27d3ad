/** The overlay's gossipsub event topics (kept apart from registry.ts so the agent can name them without loading libp2p). */
export const TOPICS = {
  objectAvailable: 'berth/object-available',
  lockerStatus: 'berth/locker-status',
  serviceChange: 'berth/service-change'
} as const
export type Topic = typeof TOPICS[keyof typeof TOPICS]
