# Keeps the EXAMPLES section of a help2man page one command a line.
/^\.SH EXAMPLES/,/^\.SH [^E]/{
  /^\.IP$/a\
.nf
  /^\.SH [^E]/i\
.fi
}
