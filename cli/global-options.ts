/** The options every command takes, parsed once by the program and read by each command's module. */
export type GlobalOptions = {
  json: boolean;
  quiet: boolean;
  platform?: string;
  insecure: string[];
  caFile?: string;
  authfile?: string;
  creds?: string;
};
