export { buildApp, type ApiDeps, type AppOptions } from './app.js';
export { STATUS_BY_KIND, toHttpError, type ErrorBody } from './errors.js';
