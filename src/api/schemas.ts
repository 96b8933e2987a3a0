import { Type, type Static } from '@sinclair/typebox';
import { ErrorSchema } from '../core/wire.js';

export {
  ErrorSchema,
  ImageSchema,
  GcResultSchema,
  HealthSchema,
  ResourcesSchema,
  LayerProgressSchema,
} from '../core/wire.js';

export {
  CreateImageRequestSchema,
  type CreateImageRequestWire as CreateImageRequest,
} from '../core/wire-ops.js';

export const ImageNameParams = Type.Object({
  name: Type.String({
    minLength: 1,
    maxLength: 600,
    description: 'URL-encoded reference or sha256 digest',
  }),
});
export type ImageNameParamsT = Static<typeof ImageNameParams>;

/** `:id` of an instance route: its id or its name. */
export const InstanceIdParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128, description: 'Instance id or name' }),
});
export type InstanceIdParamsT = Static<typeof InstanceIdParams>;

export const ImportQuery = Type.Object(
  { name: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })) },
  { additionalProperties: false },
);

export const ResourcesQuery = Type.Object(
  {
    refresh: Type.Optional(
      Type.Boolean({ description: 'Re-run the KVM probe instead of using the cached result' }),
    ),
  },
  { additionalProperties: false },
);

/** Error responses every route may return. */
export const errorResponses = {
  400: ErrorSchema,
  401: ErrorSchema,
  404: ErrorSchema,
  409: ErrorSchema,
  500: ErrorSchema,
  503: ErrorSchema,
  507: ErrorSchema,
} as const;
