#!/usr/bin/env node
import { processIo, runCli } from './run.js';

void runCli(process.argv.slice(2), processIo()).then((code) => process.exit(code));
