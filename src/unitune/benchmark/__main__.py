from unitune.benchmark.run import main

main()
