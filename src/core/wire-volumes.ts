/**
 * Wire types of volumes (`/volumes`, `/instances/{id}/volumes/{volume_id}`),
 * shaped after hypeman's `Volume`, `VolumeAttachment`, `CreateVolumeRequest`
 * and `AttachVolumeRequest`. `VolumeMount` (the create-time form) is in
 * wire.ts with the instance create request.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TagsSchema } from './wire.js';

export const VolumeAttachmentSchema = Type.Object(
  {
    instance_id: Type.String(),
    mount_path: Type.String({ description: 'Mount path in the guest' }),
    readonly: Type.Boolean({
      description: 'The volume itself is only read (true for overlay attachments)',
    }),
    overlay: Type.Optional(
      Type.Boolean({
        description: 'Vessel: the instance writes to a private copy-on-write layer over the volume',
      }),
    ),
  },
  { title: 'VolumeAttachment' },
);
export type VolumeAttachment = Static<typeof VolumeAttachmentSchema>;

export const VolumeSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    size_gb: Type.Integer(),
    tags: Type.Optional(TagsSchema),
    attachments: Type.Array(VolumeAttachmentSchema, {
      description: 'Current attachments (empty if not attached)',
    }),
    created_at: Type.String({ format: 'date-time' }),
  },
  { title: 'Volume' },
);
export type Volume = Static<typeof VolumeSchema>;

export const VOLUME_NAME_PATTERN = '^[a-z0-9][a-z0-9_.-]{0,62}$';
export const VOLUME_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';

export const CreateVolumeRequestSchema = Type.Object(
  {
    id: Type.Optional(
      Type.String({
        pattern: VOLUME_ID_PATTERN,
        description: 'Custom identifier (default: generated)',
      }),
    ),
    name: Type.String({ pattern: VOLUME_NAME_PATTERN }),
    size_gb: Type.Integer({ minimum: 1, maximum: 16384, description: 'Size in GiB' }),
    tags: Type.Optional(TagsSchema),
  },
  { title: 'CreateVolumeRequest', additionalProperties: false },
);
export type CreateVolumeRequest = Static<typeof CreateVolumeRequestSchema>;

export const AttachVolumeRequestSchema = Type.Object(
  {
    mount_path: Type.String({ minLength: 1, maxLength: 4096 }),
    readonly: Type.Optional(Type.Boolean({ default: false })),
    overlay: Type.Optional(
      Type.Boolean({
        description: 'Vessel: a private copy-on-write layer over the (read-only) volume',
      }),
    ),
    overlay_size: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 32,
        description: 'Size of the private layer ("1GB"; default: the volume\'s size)',
      }),
    ),
  },
  { title: 'AttachVolumeRequest', additionalProperties: false },
);
export type AttachVolumeRequest = Static<typeof AttachVolumeRequestSchema>;
