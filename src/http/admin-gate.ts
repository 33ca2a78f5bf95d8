import type { Express, Request, RequestHandler, Response } from 'express';
import type { AuditEvent, AuditLog } from '../audit/audit-log';
import type { RefusalAudit } from '../audit/refusal-audit';
import type { Config } from '../config/schema';
import { BrokerError } from '../domain/errors';
import { isBreakGlassCaller, type AdminCaller } from '../domain/types';
import { adminPermissions, type AdminPermission } from '../policy/admin-roles';
import { callerOf } from './authenticate';
import { isUnder, listRoutes } from './route-table';

export interface AdminGateDeps {
  config: Pick<Config, 'admins'>;
  audit: Pick<AuditLog, 'append'>;
  refusals: Pick<RefusalAudit, 'record'>;
  nowMs: () => number;
}

export interface AdminRouteOptions {
  /** Body members recorded in the audit event (the selector, the reason...); never one that holds a secret. */
  auditBody?: readonly string[];
}

/** Bounds on what a caller's input may put in an audit event: a forbidden caller writes there too. */
const MAX_INPUT_FIELDS = 16;
const MAX_KEY_CHARS = 64;
const MAX_VALUE_CHARS = 256;

type Detail = NonNullable<AuditEvent['detail']>;

/**
 * The request's path parameters, query and listed body members, flattened one level (`body.selector.task`).
 * Every key carries its source as a prefix, so a query member can never pass for `outcome` or `permission`.
 */
function auditedInput(req: Request, bodyMembers: readonly string[]): Detail {
  const out: Detail = {};
  const add = (key: string, value: unknown, nest: boolean) => {
    if (value === undefined || key.length > MAX_KEY_CHARS) return;
    if (Object.keys(out).length >= MAX_INPUT_FIELDS) return;
    if (typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) out[key] = value;
    else if (typeof value === 'string') out[key] = value.slice(0, MAX_VALUE_CHARS);
    else if (nest && value && typeof value === 'object' && !Array.isArray(value))
      Object.entries(value).forEach(([child, inner]) => add(`${key}.${child}`, inner, false));
    else out[key] = String(JSON.stringify(value)).slice(0, MAX_VALUE_CHARS);
  };
  Object.entries(req.params ?? {}).forEach(([key, value]) => add(`params.${key}`, value, false));
  Object.entries(req.query ?? {}).forEach(([key, value]) => add(`query.${key}`, value, false));
  const body = (req.body && typeof req.body === 'object' ? req.body : {}) as Record<string, unknown>;
  bodyMembers.forEach((member) => add(`body.${member}`, body[member], true));
  return out;
}

/**
 * An allowed call records what the admin asked for; a forbidden one only who, which route and permission,
 * and the outcome: what a caller without the role sent is not the broker's to keep.
 */
function adminCallEvent(
  req: Request,
  caller: AdminCaller,
  call: { permission: AdminPermission; allowed: boolean; atMs: number; bodyMembers: readonly string[] },
) {
  const breakGlass = isBreakGlassCaller(caller);
  return {
    type: 'admin.call',
    atMs: call.atMs,
    issuer: caller.issuer,
    subject: caller.subject,
    actor: `${caller.issuer}/${caller.subject}`,
    // Ties the call to the admin's identity token; a break-glass token's hash is the config's, never recorded.
    ...(breakGlass ? {} : { tokenSha256: caller.tokenSha256 }),
    detail: {
      method: req.method,
      route: (req.route as { path?: string } | undefined)?.path ?? req.path,
      permission: call.permission,
      outcome: call.allowed ? 'allowed' : 'forbidden',
      breakGlass,
      ...(call.allowed ? auditedInput(req, call.bodyMembers) : {}),
    },
  } satisfies AuditEvent;
}

/** The handlers `requireAdmin` made: how `assertAdminRoutesGated` recognises a gated route. */
const gates = new WeakSet<RequestHandler>();

/**
 * Every admin route starts with this: the caller must hold a role that grants `permission`, and the call is
 * audited (`admin.call`) allowed or forbidden, before the route does anything. Fails closed: when the audit
 * event cannot be written, the call fails (503) and nothing happens unrecorded.
 */
export function requireAdmin(
  deps: AdminGateDeps,
  permission: AdminPermission,
  options: AdminRouteOptions = {},
): RequestHandler {
  const gate: RequestHandler = async (req, res, next) => {
    const caller = callerOf(res);
    const allowed = adminPermissions(deps.config, caller).has(permission);
    const bodyMembers = options.auditBody ?? [];
    const event = adminCallEvent(req, caller, { permission, allowed, atMs: deps.nowMs(), bodyMembers });
    if (allowed) return void (await deps.audit.append(event), next());
    // Within the caller's refusal budget: audited, then 403. Beyond it: 429, counted, not itemised.
    await deps.refusals.record(event);
    throw new BrokerError('forbidden', `this call needs an admin role with "${permission}"`);
  };
  gates.add(gate);
  return gate;
}

/**
 * For a route both its owner and admins read (an approval, polled by the workload that asked for it): the
 * owner passes without an admin role and without an `admin.call` event (a polling agent would flood the
 * log); anyone else goes through `requireAdmin`. `isOwner` fails closed: any doubt is "not the owner".
 */
export function requireAdminUnlessOwner(
  deps: AdminGateDeps,
  permission: AdminPermission,
  isOwner: (req: Request, res: Response) => Promise<boolean>,
): RequestHandler {
  const admin = requireAdmin(deps, permission);
  const gate: RequestHandler = async (req, res, next) => {
    const owner = await isOwner(req, res).catch(() => false);
    if (owner) next();
    else await admin(req, res, next);
  };
  gates.add(gate);
  return gate;
}

export const isAdminGate = (handler: RequestHandler): boolean => gates.has(handler);

/**
 * Start-up check that makes an unaudited admin route impossible: every route under an admin path must
 * start with `requireAdmin`, or the app is not built.
 */
export function assertAdminRoutesGated(app: Express, adminPaths: readonly string[]): void {
  for (const route of listRoutes(app)) {
    const admin = adminPaths.some((prefix) => isUnder(route.path, prefix));
    if (admin && !(route.handlers[0] && isAdminGate(route.handlers[0]))) {
      throw new Error(`admin route ${route.method} ${route.path} does not start with requireAdmin`);
    }
  }
}
