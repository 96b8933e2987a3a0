#!/usr/bin/env node
// Entry point installed as `vessel`; the compiled program lives in dist/.
import '../dist/src/main.js';
