/**
 * Reading a V8 .cpuprofile (what `node --cpu-prof` writes at exit) into the few functions that
 * cost the most, named where the person fixing them would look.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchError } from './console.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

export interface HotFunction {
  function: string;
  location: string;
  selfMs: number;
  selfPercent: number;
  /** The caller under which it spent most of that time: a generic helper (`rows`) says little without it. */
  calledFrom: string;
}

/** The newest profile in `dir`: a kept --profile-dir may hold earlier runs' too. */
export function readProfile(dir: string): CpuProfile {
  const files = existsSync(dir) ? readdirSync(dir).filter((name) => name.endsWith('.cpuprofile')).map((name) => join(dir, name)) : [];
  const newest = files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (newest === undefined) throw new BenchError(`no .cpuprofile in ${dir}: did the broker exit cleanly?`);
  return JSON.parse(readFileSync(newest, 'utf8')) as CpuProfile;
}

const sourceMaps = new Map<string, SourceMap | undefined>();

/** tsc's source map of a compiled file, read once; undefined for files without one. */
function sourceMapOf(file: string): SourceMap | undefined {
  if (!sourceMaps.has(file)) {
    const mapFile = `${file}.map`;
    sourceMaps.set(file, existsSync(mapFile) ? new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8')) as SourceMapPayload) : undefined);
  }
  return sourceMaps.get(file);
}

/**
 * Where a function lives: broker code mapped from dist/ back to its line in src/, other files
 * relative to `root` (node_modules/...), node's own modules by their node: name. Lines are
 * 1-based, as editors count.
 */
function locate(frame: CallFrame, root: string): string {
  if (!frame.url) return '';
  if (!frame.url.startsWith('file://')) return `${frame.url}:${frame.lineNumber + 1}`;
  const file = fileURLToPath(frame.url);
  const entry = sourceMapOf(file)?.findEntry(frame.lineNumber, frame.columnNumber);
  if (entry && 'originalSource' in entry) return `${relative(root, resolve(dirname(file), entry.originalSource))}:${entry.originalLine + 1}`;
  return `${relative(root, file)}:${frame.lineNumber + 1}`;
}

const nameOf = (frame: CallFrame) => frame.functionName || '(anonymous)';

/** Self time (µs) of each profile node, `(idle)` left out: waiting for work is not a cost. */
function selfTimes(profile: CpuProfile): Map<number, number> {
  const idle = new Set(profile.nodes.filter((node) => node.callFrame.functionName === '(idle)').map((node) => node.id));
  const micros = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    if (!idle.has(id)) micros.set(id, (micros.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  return micros;
}

/**
 * Self time per function over the server's whole life (start-up and warm-up are a small part),
 * highest first. Profile nodes are call-tree positions, so one function appears under many;
 * summing by name and place gives its total self time.
 */
export function hottestFunctions(profile: CpuProfile, top: number, root: string): HotFunction[] {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const places = new Map<number, string>(); // node id -> location: each frame is source-mapped once, not per sample
  const placeOf = (id: number, frame: CallFrame) => places.get(id) ?? places.set(id, locate(frame, root)).get(id) ?? '';
  const callerOf = (id: number) => {
    const parent = nodes.get(parentOf.get(id) ?? Number.NaN);
    // `(root)` is the profile's own top, not a caller (it parents GC and idle time).
    if (!parent || parent.callFrame.functionName === '(root)') return '';
    return `${nameOf(parent.callFrame)} ${placeOf(parent.id, parent.callFrame)}`.trim();
  };

  const functions = new Map<string, { function: string; location: string; micros: number; callers: Map<string, number> }>();
  for (const [id, micros] of selfTimes(profile)) {
    const node = nodes.get(id);
    if (!node) continue;
    const location = placeOf(id, node.callFrame);
    const key = `${nameOf(node.callFrame)}\u0000${location}`;
    const entry = functions.get(key) ?? { function: nameOf(node.callFrame), location, micros: 0, callers: new Map<string, number>() };
    entry.micros += micros;
    const caller = callerOf(id);
    entry.callers.set(caller, (entry.callers.get(caller) ?? 0) + micros);
    functions.set(key, entry);
  }

  const total = [...functions.values()].reduce((sum, entry) => sum + entry.micros, 0);
  const topCaller = (callers: Map<string, number>) => [...callers].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '';
  return [...functions.values()]
    .sort((a, b) => b.micros - a.micros)
    .slice(0, top)
    .map((entry) => ({
      function: entry.function,
      location: entry.location,
      selfMs: entry.micros / 1000,
      selfPercent: (100 * entry.micros) / total,
      calledFrom: topCaller(entry.callers),
    }));
}

export interface ProfileArea {
  area: string;
  selfMs: number;
  selfPercent: number;
}

/**
 * Which part of the stack a location belongs to: a folder of src/ (the broker's capabilities), a
 * package of node_modules, one of node's modules, or V8's own work ("(garbage collector)").
 */
function areaOf(frame: CallFrame, location: string): string {
  if (location === '') return frame.functionName.startsWith('(') ? frame.functionName : '(native)';
  const source = /^(?:src|dist)\/([^/:]+)/.exec(location);
  if (source) return `src/${source[1]}`;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*node_modules\/)/.exec(location);
  if (pkg) return pkg[1] as string;
  const node = /^node:(?:internal\/(?:deps\/)?)?_?([^/:_]+)/.exec(location);
  if (node) return `node:${node[1]}`;
  return location.split(':')[0] ?? location;
}

/** Self time summed by area, highest first: where the time goes, before which function spends it. */
export function timeByArea(profile: CpuProfile, root: string): ProfileArea[] {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const areas = new Map<string, number>();
  let total = 0;
  for (const [id, micros] of selfTimes(profile)) {
    const node = nodes.get(id);
    if (!node) continue;
    const area = areaOf(node.callFrame, locate(node.callFrame, root));
    areas.set(area, (areas.get(area) ?? 0) + micros);
    total += micros;
  }
  return [...areas]
    .sort((a, b) => b[1] - a[1])
    .map(([area, micros]) => ({ area, selfMs: micros / 1000, selfPercent: (100 * micros) / total }));
}
