import { spawn } from 'node:child_process';

/** A program and its arguments, each argument handed to the program as it is. */
export interface Command {
  command: string;
  args: string[];
}

/** Only web pages are opened: anything else given as a sign-in page is not one. */
export class NotAWebAddress extends Error {
  override readonly name = 'NotAWebAddress';
}

/**
 * The program that opens `url` in the default browser on `platform`, and its arguments: the URL
 * is one argument and no shell ever reads it. On Windows that rules out `cmd /c start`, where
 * every `&` of an authorization URL ends the command and what follows runs as another; url.dll's
 * FileProtocolHandler, through rundll32, is the long-standing way to give a URL to the default
 * browser without a command interpreter (Go's pkg/browser does the same). rundll32 is named by
 * its full path, as Windows looks for a bare name in the current folder first.
 *
 * Only http(s) URLs, as the URL parser writes them: a `file:` URL or a share handed to an opener
 * would run a program, and the written form has no white space or quote for Node to wrap the
 * Windows argument in quotes that rundll32 would pass on.
 */
export function browserCommand(platform: NodeJS.Platform, url: string, env: NodeJS.ProcessEnv = {}): Command {
  const href = webAddress(url);
  if (platform === 'darwin') return { command: 'open', args: [href] };
  if (platform === 'win32') return { command: `${env.SystemRoot ?? 'C:\\Windows'}\\System32\\rundll32.exe`, args: ['url.dll,FileProtocolHandler', href] };
  return { command: 'xdg-open', args: [href] };
}

function webAddress(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new NotAWebAddress(`${url} is not a web address`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw new NotAWebAddress(`${parsed.protocol} is not a web address`);
  return parsed.href;
}

/** Best effort: the URL is on the terminal anyway. */
export function openBrowser(url: string): void {
  try {
    const { command, args } = browserCommand(process.platform, url, process.env);
    spawn(command, args, { stdio: 'ignore', detached: true, shell: false }).on('error', () => undefined).unref();
  } catch {
    // No opener on this machine, or no web page to open: the user opens the printed URL.
  }
}
