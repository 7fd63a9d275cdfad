import { afterAll } from 'vitest';
import { removeTempDirs } from '../helpers/temp.js';

// Runs in every test file: what tempDir() made goes when the file is done.
afterAll(removeTempDirs);
