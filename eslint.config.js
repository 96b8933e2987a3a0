// ESLint flat config: type-checked typescript-eslint rules, Prettier for
// formatting, and a local rule that enforces the subsystem dependency direction.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';
import layering from './scripts/eslint-layering.js';

// Every CLI command loads src/main.ts, src/cli and src/client: what only some commands need
// is imported inside them (`await import(...)`), so `vessel ps` starts in about the time of a
// bare `node` (bench P8; test/unit/cli/startup.test.ts checks what is really loaded).
const LIGHT_STARTUP = [
  {
    group: [
      '@sinclair/typebox',
      '@sinclair/typebox/*',
      'undici',
      'ws',
      'tar-stream',
      'fastify',
      'pino',
      'prom-client',
      'better-sqlite3',
    ],
    allowTypeImports: true,
    message: 'too heavy for every CLI command: import it where it is used (await import)',
  },
  {
    group: ['**/core/config.js', '**/core/wire.js', '**/exec-stream.js', '**/exec-attach.js'],
    allowTypeImports: true,
    message:
      'loads TypeBox or ws for every CLI command: import types only (names: core/wire-names.js), or await import() where used',
  },
];

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'packages/*/dist/**',
      'node_modules/**',
      '.vessel-dev/**',
      'guest-agent/**',
      'jailer/**',
      'scripts/**',
      'bin/**',
      'eslint.config.js',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { vessel: layering },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'vessel/layering': 'error',
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'test', 'it', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
  {
    files: ['src/main.ts', 'src/cli/**/*.ts', 'src/client/**/*.ts'],
    // Loaded only by the command that needs them: they may import what they need.
    ignores: ['src/cli/exec-attach.ts', 'src/client/exec-stream.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: LIGHT_STARTUP }],
    },
  },
  {
    files: ['src/cli/main.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            ...LIGHT_STARTUP,
            {
              group: ['./commands/*'],
              allowTypeImports: true,
              message: 'add the module to COMMAND_MODULES: it is imported when its command runs',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/main.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            ...LIGHT_STARTUP,
            {
              group: ['./daemon/*'],
              allowTypeImports: true,
              message: 'import the daemon inside the `daemon` command only',
            },
          ],
        },
      ],
    },
  },
  prettier,
);
