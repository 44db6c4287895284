# bash completion for sandgate: commands, options, sandbox names and files.
_sandgate_sandboxes() {
  local home=${SANDGATE_HOME:-$HOME/.sandgate}
  [ -d "$home/sandboxes" ] && ls -1 "$home/sandboxes" 2>/dev/null
}

_sandgate() {
  local cur prev cmd sub
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  cmd=${COMP_WORDS[1]}
  sub=${COMP_WORDS[2]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "run exec ls stop rm env image network proxy policy --help --version" -- "$cur"))
    return
  fi
  case $prev in
    --policy|--config|--hosts-file|--log|--log-key|--workspace)
      COMPREPLY=($(compgen -f -- "$cur")); return ;;
    -w) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --accel) COMPREPLY=($(compgen -W "auto kvm tcg" -- "$cur")); return ;;
    --verdict) COMPREPLY=($(compgen -W "allow deny report error" -- "$cur")); return ;;
  esac
  case $cmd in
    run)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "-d --detach --name --policy -e --hosts-file -w --allow-unsafe-workspace
          --workspace-readonly --exclude --cpus --memory --accel --boot-timeout --help" -- "$cur"))
      else
        COMPREPLY=($(compgen -d -- "$cur"))
      fi ;;
    exec)
      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "-i -t -it -e -w --help" -- "$cur"))
      else COMPREPLY=($(compgen -W "$(_sandgate_sandboxes)" -- "$cur")); fi ;;
    stop|rm) COMPREPLY=($(compgen -W "$(_sandgate_sandboxes) -f --timeout --help" -- "$cur")) ;;
    ls) COMPREPLY=($(compgen -W "--json --help" -- "$cur")) ;;
    env)
      if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "set unset ls" -- "$cur"))
      else COMPREPLY=($(compgen -W "$(_sandgate_sandboxes)" -- "$cur")); fi ;;
    image)
      if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "build ls rm prune --help" -- "$cur")); fi ;;
    network)
      if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "log proxy" -- "$cur"))
      elif [ "$sub" = log ] && [[ $cur != -* ]]; then
        COMPREPLY=($(compgen -W "verify suggest $(_sandgate_sandboxes)" -- "$cur"))
      elif [ "$sub" = log ]; then
        COMPREPLY=($(compgen -W "--log --json --raw --quiet --limit --since --until --verdict --host --rule
          --sandbox --follow --help" -- "$cur"))
      elif [ "$sub" = proxy ] && [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--default --policy --allow-host --block-host --allow-cidr --block-cidr --help" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "$(_sandgate_sandboxes)" -- "$cur"))
      fi ;;
    policy)
      if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "check explain" -- "$cur"))
      else COMPREPLY=($(compgen -f -- "$cur")); fi ;;
    proxy)
      COMPREPLY=($(compgen -W "--config --listen --log --log-key --admin --hosts-file --help" -- "$cur")) ;;
  esac
}
complete -F _sandgate sandgate
