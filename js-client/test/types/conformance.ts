// Compiled by `npm run typecheck` (test/types/tsconfig.json): the implementation, src/index.js as
// TypeScript reads its JSDoc, must provide everything zmqwamp.d.ts publishes, with compatible types.
// A declaration the code does not implement (or implements differently) fails here.
import type * as Published from "zmqwamp-client";
import * as implementation from "../../src/index.js";

type Instance<C> = C extends abstract new (...args: never[]) => infer I ? I : never;

// Every export.  The socket classes are exported for `instanceof`, but made only by ctx.Socket()
// (private constructors in the declarations), so their construct signatures are not compared.
export const conforms: Omit<typeof Published, "ReqSocket" | "SubSocket"> = implementation;
export const socketClasses: [Function, Function] = [implementation.ReqSocket, implementation.SubSocket];

// Instances: their methods are what users call.
export const context: Published.ZmqContext = {} as Instance<typeof implementation.ZmqContext>;
export const req: Published.ReqSocket = {} as Instance<typeof implementation.ReqSocket>;
export const sub: Published.SubSocket = {} as Instance<typeof implementation.SubSocket>;
export const error: Published.ZmqError = {} as Instance<typeof implementation.ZmqError>;
