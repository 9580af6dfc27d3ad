/**
 * Long-running commands (`berth start`, `berth agent`): start parts in order, report where they
 * listen, run until SIGINT/SIGTERM, then stop them in reverse order.
 */
import { BerthError } from '../core/errors.ts'
import { untilSignal } from './output.ts'

export interface Part {
  name: string
  start (): Promise<void>
  stop (): Promise<void>
}

/** A port already taken is the usual reason a daemon cannot start: say so plainly. */
function explainListenError (err: unknown): unknown {
  const e = err as { code?: string, message?: string }
  if (e?.code === 'EADDRINUSE') return new BerthError('ERR_ADDRESS_IN_USE', `${e.message ?? 'address in use'} (another agent running? pick other ports with --listen/--peer-listen)`, 500, { cause: err })
  if (e?.code === 'EADDRNOTAVAIL' || e?.code === 'EACCES') return new BerthError('ERR_LISTEN', e.message ?? 'cannot listen', 500, { cause: err })
  return err
}

export async function startParts (parts: readonly Part[]): Promise<void> {
  const touched: Part[] = []
  try {
    // A part that failed half way may hold resources (an open store): it is stopped too.
    for (const p of parts) { touched.push(p); await p.start() }
  } catch (err) {
    await stopParts(touched)
    throw explainListenError(err)
  }
}

export async function stopParts (parts: readonly Part[]): Promise<void> {
  for (const p of [...parts].reverse()) await p.stop().catch(() => {})
}

/**
 * Listens for SIGINT/SIGTERM from the moment it is called — a Ctrl-C during startup still ends in
 * a clean stop — and, once `serve` is awaited, stops everything on the first one.
 */
export function stopOnSignal (quiet: boolean): { serve: (parts: readonly Part[]) => Promise<void> } {
  const signalled = untilSignal()
  return {
    async serve (parts) {
      const signal = await signalled
      if (!quiet) process.stderr.write(`berth: ${signal}, stopping\n`)
      await stopParts(parts)
      // Nothing should keep the loop alive after a clean stop; if something does, do not hang.
      setTimeout(() => process.exit(process.exitCode ?? 0), 2000).unref()
    }
  }
}
