"""File formats, knowing nothing of fleets: flat packages (xar, cpio, BOM), DER/BER and CMS, Mach-O."""
