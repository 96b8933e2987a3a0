/**
 * Response header of `GET /instances/{id}/archive`: base64 of the source's PathInfo JSON
 * (Docker sends `X-Docker-Container-Path-Stat` the same way). Its own module so the
 * client can use it without loading the wire schemas.
 */
export const PATH_STAT_HEADER = 'x-vessel-path-stat';
