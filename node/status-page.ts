/** The status page served at `/`. */
export function statusPage(): string {
  return '<!doctype html><title>Tally</title><p>Tally</p>';
}
