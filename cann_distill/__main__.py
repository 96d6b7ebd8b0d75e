from cann_distill.cli import main

main()
