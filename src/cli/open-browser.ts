import { spawn } from 'node:child_process';

/** A program and its arguments, each argument handed to the program as it is. */
export interface Command {
  command: string;
  args: string[];
}

/** The program that opens `url` in the default browser on `platform`, and its arguments. */
export function browserCommand(platform: NodeJS.Platform, url: string): Command {
  if (platform === 'darwin') return { command: 'open', args: [url] };
  if (platform === 'win32') return { command: 'cmd', args: ['/c', 'start', '', url] };
  return { command: 'xdg-open', args: [url] };
}

/** Best effort: the URL is on the terminal anyway. */
export function openBrowser(url: string): void {
  const { command, args } = browserCommand(process.platform, url);
  try {
    spawn(command, args, { stdio: 'ignore', detached: true }).on('error', () => undefined).unref();
  } catch {
    // No opener on this machine: the user opens the printed URL.
  }
}
