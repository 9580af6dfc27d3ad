/**
 * `berth`: one binary, one subcommand per file under commands/. Each command is a thin layer
 * over the SDK, the daemons' create* functions and src/apps; this file only wires them up and
 * turns every failure into `berth: CODE: message` on stderr plus an exit code.
 */
import { Command, CommanderError } from 'commander'
import { registerAgent } from './commands/agent.ts'
import { registerAlto } from './commands/alto.ts'
import { registerCp } from './commands/cp.ts'
import { registerDistribute } from './commands/distribute.ts'
import { registerGet } from './commands/get.ts'
import { registerLocker } from './commands/locker.ts'
import { registerOid } from './commands/oid.ts'
import { registerOverlay } from './commands/overlay.ts'
import { registerPortal } from './commands/portal.ts'
import { registerPut } from './commands/put.ts'
import { registerStart } from './commands/start.ts'
import { registerStatus } from './commands/status.ts'

const VERSION = '0.1.0'

export function buildProgram (): Command {
  const program = new Command('berth')
    .description('Berth: content-addressed data transfer — agents that move objects named by their hash')
    .version(VERSION, '-V, --version')
    .showSuggestionAfterError(true)
    // Usage errors are reported like every other failure: one line, exit code 2.
    .exitOverride()
    .configureOutput({
      outputError: (text, write) => write(`berth: ERR_USAGE: ${text.replace(/^error:\s*/, '').replace(/\s*\n\s*/g, ' ').trim()}\n`)
    })
    .addHelpText('after', '\nThe agent is found at --agent URL, else $BERTH_AGENT, else http://127.0.0.1:4650.\nExit codes: 0 ok, 1 error, 2 bad input, 3 not found, 4 integrity failure, 5 source/network/remote failure.')
  // Subcommands inherit exitOverride and configureOutput because they are added afterwards.
  registerStart(program)
  registerAgent(program)
  registerOid(program)
  registerPut(program)
  registerGet(program)
  registerStatus(program)
  registerCp(program)
  registerLocker(program)
  registerDistribute(program)
  registerAlto(program)
  registerOverlay(program)
  registerPortal(program)
  return program
}

export async function main (argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv)
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help, --version, and bare `berth` (help, exit 1) carry their own exit code.
      const helpish = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help'
      process.exitCode = helpish ? err.exitCode : 2
      return
    }
    throw err
  }
}

await main(process.argv)
